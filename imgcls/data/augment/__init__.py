"""imgcls.data.augment."""
