"""The command line, ``fvae-asr <command>`` (``main``): one module per command of its own (``transcribe``,
``evaluate``, ``align``, ``latents``); ``train`` runs the packaged TIMIT recipe, ``demo`` and ``synthetic`` run
those packages' ``main``. The CLI depends on the recipe and the demo, never the reverse; the argument types it
shares with them are ``fvae_asr.argument_types``.
"""
