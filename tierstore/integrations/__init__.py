"""Backends of other frameworks over a ``TierStore``: Django (``django.py``) and dogpile.cache (``dogpile.py``).

Nothing here is imported by ``tierstore`` itself: each backend module needs its
framework installed (``pip install 'tierstore[django]'`` or ``'tierstore[dogpile]'``).
Backends that name one directory share one store in the process (``registry.py``).
"""
