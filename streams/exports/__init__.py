"""Analysis reports: building them (CSV, Excel), storing them, delivering them."""
