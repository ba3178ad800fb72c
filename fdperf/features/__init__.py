"""The HDF5 feature store (layout in store.py): `FeatureStore` reads, `FeatureStoreWriter` writes."""

from .store import FORMAT_VERSION, FeatureStore, FeatureStoreWriter, StoreError, key_from_str, key_to_str

__all__ = ["FORMAT_VERSION", "FeatureStore", "FeatureStoreWriter", "StoreError", "key_from_str", "key_to_str"]
