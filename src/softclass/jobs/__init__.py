"""Jobs: compare, train, predict, bench and the model store, called by the CLI and the estimator."""
