"""imgcls.run."""
