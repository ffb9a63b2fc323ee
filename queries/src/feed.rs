//! Reads of the `feed` view.
