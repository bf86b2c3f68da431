"""imgcls.data.sources."""
