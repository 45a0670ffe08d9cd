"""Turning files into validated Conversation records: parsing, mapping and business rules."""
