"""imgcls.sweeps."""
