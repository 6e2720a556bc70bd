"""Training: ``build_run`` builds everything a run needs once, ``train_step`` takes one optimizer step, ``distill`` loops."""
