"""Pieces shared by every stage: errors, I/O, column names, logging, the servable model."""
