"""imgcls.config."""
