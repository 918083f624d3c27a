"""The nn.Modules that tasks and schemes use."""
