//! Reads of the `follow` view.
