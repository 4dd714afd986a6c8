"""The recipes, also shipped inside the package as ``fvae_asr.recipes``: the offline demo runs the TIMIT recipe's
hyperparameters from an installed wheel. Users run ``recipes/timit/train.py`` from a checkout."""
