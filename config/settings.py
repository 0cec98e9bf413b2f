"""The one settings object of the product; every field reads env var HAPVR_<NAME>.

CLI flags override fields; the service reads the same object, so a deployment
is configured in one place (see docs/CONFIG.md for the table).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.limits import Limits
from model.encoder_config import DEFAULT_SIZE, PRECISIONS, EncoderConfig, shipped_int8_ranges, shipped_pca


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAPVR_", extra="ignore")

    # --- store and engine
    data: Path = Field(Path("hapvr-data"), description="data directory: SQLite, features, FAISS index")
    cache_dir: Path = Field(Path.home() / ".cache" / "hapvr", description="ONNX export cache")
    catalog: str = Field("", description="cluster mode: the catalog (video rows, model version, deletion log) as "
                         "postgresql://user:password@host:5432/db; unset: SQLite in the data directory")
    features: str = Field("", description="cluster mode: the feature store as s3://bucket/prefix; unset: files "
                          "in the data directory")
    vectors: str = Field("", description="cluster mode: the coarse stage's vector index as "
                         "milvus://host:19530/collection, or a file path for milvus-lite (one process); unset: FAISS "
                         "in the data directory")
    uploads: str = Field("", description="cluster mode: where uploads wait for a worker, as s3://bucket/prefix; "
                         "unset: uploads/ under an S3 HAPVR_FEATURES prefix, else the data directory")
    media: str = Field("", description="where key frames and kept uploads live (the web UI shows them), as "
                       "s3://bucket/prefix; unset: media/ under an S3 HAPVR_FEATURES prefix, else the data directory")
    keep_uploads: bool = Field(True, description="keep each uploaded video's file in the media store after it is "
                               "indexed, so the web UI can play it (costs the file's size); false: key frames only")
    keyframes: int = Field(120, ge=0, description="key frames kept per video for the web UI (spread evenly over the "
                           "sampled frames; about 3 KB each); 0: none")
    keyframe_height: int = Field(96, ge=16, le=720, description="height in pixels of the stored key frames")
    s3_endpoint: str = Field("", description="S3 endpoint URL for a server other than AWS (MinIO, Ceph, moto); "
                             "credentials come from the standard AWS variables")
    feature_cache_mb: int = Field(512, ge=0, description="S3 feature store: features kept in memory for re-rank "
                                  "reads (least recently used out first)")
    device: str = Field("auto", description="auto, cpu or cuda")
    sample_fps: float = Field(1.0, description="frames sampled per second of video (paper: 1)")
    min_frames: int = Field(8, description="short clips are sampled densely to reach this many frames")
    encode_batch: int = Field(32, description="frames per encoder batch")
    blank_frame_std: float = Field(5.0, ge=0, description="frames whose luma standard deviation (0-255) is below "
                                   "this are blank (black, fades, flat colour) and left out of the index and of "
                                   "queries: they are no evidence of copying. 0 keeps every frame")

    # --- encoder
    backbone: str = Field("efficientnet-lite0", description="efficientnet-lite0 or resnet50")
    pca_path: Path | None = Field(None, description="PCA whitening file (.npz or ViSiL .pth); unset: the shipped "
                                  "Lite0 PCA for the frame size")
    resnet50_weights: Path | None = Field(None, description="torchvision ResNet-50 state dict (resnet50 only)")
    resize_mode: str = Field("squash", description="squash (whole frame) or crop (paper: centre crop)")
    frame_size: int | None = Field(None, ge=32, description="encoder input side in pixels; unset: 176 for Lite0, "
                                   "224 (the paper's) for ResNet-50. The PCA file must be learnt at this size")
    encoder_precision: str = Field("auto", description="auto (int8 on a CPU with int8 dot products (VNNI) where "
                                   "int8 ranges exist for the encoder, else fp32), fp32, or int8: the quantized "
                                   "encoder (onnxruntime on CPU only, about half the CPU per frame). int8 and fp32 "
                                   "features of one config share a collection")
    int8_ranges: Path | None = Field(None, description="int8 activation ranges (`hapvr calibrate-int8`); unset: the "
                                     "shipped Lite0 ranges for the frame size")

    # --- similarity network
    checkpoint: Path | None = Field(None, description="similarity-network checkpoint; default: shipped one if present")
    use_checkpoint: bool = Field(True, description="false: untrained Chamfer similarity even if a checkpoint ships")
    chamfer_mix: float | None = Field(None, ge=0.0, le=1.0, description="share of the training-free Chamfer score "
                                      "in a checkpoint's score (0: the paper's learned score alone); unset: the "
                                      "checkpoint's own value")
    comparator: bool | None = Field(None, description="false: score a checkpoint's attended features with the "
                                    "training-free Chamfer instead of its comparator CNN (true: the paper's "
                                    "network); unset: the checkpoint's own choice")
    rerank_precision: str = Field("auto", description="auto (bfloat16 region products and comparator convolutions "
                                  "on CPUs whose bf16 units pay off, docs/CONFIG.md), float32, bfloat16")
    confidence_map: Path | None = Field(None, description="calibrated-confidence map (indexer/confidence.py); "
                                        "unset: the shipped one, used only with the model version it was fitted for")
    f2f_topk_rate: float = 0.1
    v2v_topk_rate: float = 0.03

    # --- search
    candidates: int = Field(100, description="videos kept by the FAISS stage for re-ranking")
    rerank_cascade: int = Field(30, ge=0, description="with a checkpoint that mixes in Chamfer: the learned "
                                "part (attention, comparator) scores only this many candidates (at least "
                                "top_k), those with the highest Chamfer share; 0: every candidate")
    frame_neighbours: int = Field(64, description="FAISS neighbours per query frame")
    top_k: int = 10
    ivf_threshold: int = Field(20_000, description="frames above which the coarse index becomes IVF-SQ8")
    nprobe: int = Field(16, description="IVF lists visited per query frame")
    duplicate_neighbours: int = Field(10, ge=1, le=100, description="hapvr duplicates: pairs scored per video "
                                      "(its top results); a set larger than this still holds together "
                                      "(indexer/duplicates.py)")
    duplicate_candidates: int = Field(30, ge=1, description="hapvr duplicates: FAISS candidates per video, scored by "
                                      "plain Chamfer; the learned network scores the best HAPVR_DUPLICATE_NEIGHBOURS "
                                      "of them (a query: HAPVR_CANDIDATES and HAPVR_RERANK_CASCADE)")
    duplicate_frame_neighbours: int = Field(32, ge=1, description="hapvr duplicates: FAISS neighbours per frame of "
                                            "the scanned video (a query: HAPVR_FRAME_NEIGHBOURS)")
    query_flip: bool = Field(True, description="also match the mirrored query (catches horizontally flipped copies)")

    # --- service
    redis_url: str | None = Field(None, description="Redis job queue; unset: in-process queue (embedded default)")
    redis_prefix: str = Field("hapvr", description="prefix of every Redis key (several deployments per Redis)")
    api_keys: str = Field("", description="comma-separated API keys; empty: no authentication")
    max_upload_bytes: int = Field(2 * 1024**3, description="larger uploaded files get HTTP 413")
    max_request_bytes: int = Field(16 * 1024**3, description="largest multipart POST /index request (all its "
                                   "files together); larger bodies get HTTP 413 before they are read")
    max_json_bytes: int = Field(1024**2, description="largest JSON request body (HTTP 413 above)")
    rate_limit: float = Field(20.0, ge=0, description="requests a second per API key (per client address when "
                              "keys are off), on average; 0: no limit. Over it: HTTP 429 with Retry-After")
    rate_burst: int = Field(100, ge=1, description="requests a client may send at once before rate_limit applies")
    import_root: Path | None = Field(None, description="server-side folder POST /index may import from")
    query_timeout_s: float = Field(30.0, description="POST /query answers 202 + job id after this")
    job_visibility_s: float = Field(30.0, description="a job held this long by a silent worker is re-delivered")
    local_workers: int = Field(1, description="worker threads of the in-process queue")
    worker_jobs: int = Field(2, description="jobs one worker process runs at once; their frames share encoder batches")

    # --- input limits
    max_bytes: int = 4 * 1024**3
    max_duration_s: float = 4 * 3600.0
    max_pixels: int = 8192 * 8192
    max_fps: float = Field(1000.0, gt=0, description="declared frame rates above this are refused (bad_dimensions), "
                           "as are files declaring more frames than it allows for their duration")

    failpoints: str = Field("", description="fault tests only: comma-separated points (decode, embed, commit, "
                            "index_save, duplicates_scan) where the process SIGKILLs itself (indexer/failpoints.py)")

    def encoder_config(self) -> EncoderConfig:
        size = self.frame_size or DEFAULT_SIZE.get(self.backbone, 224)
        return EncoderConfig(backbone=self.backbone, pca_path=self.pca_path or shipped_pca(size),
                             weights_path=self.resnet50_weights, resize_mode=self.resize_mode, size=size,
                             precision=self.precision(size), int8_ranges=self.int8_ranges)

    def precision(self, size: int) -> str:
        """`encoder_precision` with auto resolved: int8 where it runs well (a CPU with int8 dot products) and has
        ranges, else fp32."""
        if self.encoder_precision not in ("auto", *PRECISIONS):
            raise ValueError(f"HAPVR_ENCODER_PRECISION must be auto, fp32 or int8, not {self.encoder_precision!r}")
        if self.encoder_precision != "auto":
            return self.encoder_precision
        from model.quantize import cpu_has_int8_dot

        ranges = self.int8_ranges or (shipped_int8_ranges(size) if self.backbone == "efficientnet-lite0" else None)
        usable = ranges is not None and ranges.is_file()
        return "int8" if usable and self.torch_device() == "cpu" and cpu_has_int8_dot() else "fp32"

    def limits(self) -> Limits:
        return Limits(max_bytes=self.max_bytes, max_duration_s=self.max_duration_s, max_pixels=self.max_pixels,
                      max_fps=self.max_fps)

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
