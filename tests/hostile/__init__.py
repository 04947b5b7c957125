"""The bad-input corpus (issue 15, item 6): every hostile input gets the documented answer."""
