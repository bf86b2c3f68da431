"""imgcls.inference."""
