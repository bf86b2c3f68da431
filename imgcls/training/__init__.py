"""imgcls.training."""
