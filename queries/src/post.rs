//! Reads of the `post` view.
