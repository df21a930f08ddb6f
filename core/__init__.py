"""open-dsm core: domain and services shared by the BACnet and REST faces.

This package imports neither the adapters (``api``, ``bacnet``) nor their frameworks; TensorFlow is
imported only inside the trainer module, which runs in its own process.
"""
