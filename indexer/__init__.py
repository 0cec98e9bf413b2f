"""Index and search engine: decode -> embed -> store -> FAISS coarse search -> HAP-VR re-rank."""
