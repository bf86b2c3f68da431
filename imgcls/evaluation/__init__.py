"""imgcls.evaluation."""
