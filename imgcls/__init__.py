"""imgcls: a JAX/Flax research codebase for image classification."""
