"""Stock: importing codes (importer), voiding lots and reading levels (lots), resealing with a
new key (rotate), and checking the stock promises (reconcile)."""
