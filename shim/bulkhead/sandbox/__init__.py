"""The pod sandbox: one microVM, its agent, its shared directory and its containers."""
