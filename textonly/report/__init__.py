"""The tables and figures the book's pages show (reads the study; the study never imports it)."""
