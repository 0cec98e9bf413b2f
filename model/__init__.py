"""HAP-VR model core: frame encoder (`model.encoder`), similarity network (`model.similarity`), losses
(`model.losses`) and training (`model.train`).

The package imports nothing on its own: importing a torch-free part (`model.train_config`) must not load
torch, so that the `hapvr` command starts fast.
"""
