"""The network: designs A-D (output activation, loss, targets), activations and the MLP."""
