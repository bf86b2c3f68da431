"""imgcls.transfer."""
