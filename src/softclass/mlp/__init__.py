"""The network: the registries of designs (output activation, loss, targets), activations and
optimizers, and the MLP."""
