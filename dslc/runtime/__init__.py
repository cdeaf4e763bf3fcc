"""Running the compiled graphs: the only package that imports `onnxruntime`.

    session.py     ORT sessions (CPU/CUDA), the training step with IO binding, evaluation, prediction
    data.py        `.npz` loading and checking against the manifest
    train.py       the training loop, per-step seeds, checkpoints each epoch, exact resume
    checkpoint.py  `<run>/checkpoint.npz`: save, load, check it fits the model
    progress.py    the console reporter the CLI hands to the training loop

Nothing is imported here, so `dslc.runtime.data` can be used without loading onnxruntime.
"""
