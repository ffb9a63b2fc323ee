//! Reads of the `notification` view.
