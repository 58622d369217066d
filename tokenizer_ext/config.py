"""Tokenizer settings: YAML recipe / command line -> `TokenizerConfig` (method, model, training, split).

Defaults are the 3MToken paper's; each field's help names the section. `recipes/tokenizers/<method>.yaml` spell
out the paper configuration of each method and are the documentation of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

METHODS = ("rqvae", "vqvae", "kmeans", "rqkmeans", "psrq", "psrq_joint", "fusid", "musicrec")
# Methods that quantize all modalities of a track at once (tokenizer_ext/quantizers/base.py JointQuantizer).
JOINT_METHODS = ("psrq_joint", "fusid", "musicrec")

# Sec. 3 "RQ-VAE Configuration" / App. B: (K1, K2, K3) = (32, 64, 128). Sec. 3 "Baselines": VQ-VAE codebook size
# and K-means clusters are 1024 per modality.
# RQ-KMeans takes 3MToken's levels (it is the RQ-VAE without the autoencoder). PSRQ Sec. 5: 3 layers of 128 clusters
# (Music4all). FusID Sec. 2.2: n = 5 sub-embeddings, K = 1024 each. MusicRec "Implementation Details" / Fig. 4:
# 4 levels of 256, shared : specific = 1 : 1.
DEFAULT_CODEBOOK_SIZES = {"rqvae": (32, 64, 128), "vqvae": (1024,), "kmeans": (1024,), "rqkmeans": (32, 64, 128),
                          "psrq": (128, 128, 128), "psrq_joint": (128, 128, 128), "fusid": (1024,) * 5,
                          "musicrec": (256, 256, 256, 256)}

# Fields that only say where or how fast to run: they never change a trained quantizer, so a checkpoint trained
# with other values of them is reused. K-means reads only KMEANS_FIELDS (its training has no epochs, lr, ...).
RUNTIME_FIELDS = ("device", "modalities", "disambiguate", "encode_chunk_rows")
KMEANS_FIELDS = ("method", "codebook_sizes", "test_fraction", "seed", "kmeans_full_batch_max_rows")
KMEANS_METHODS = ("kmeans", "rqkmeans", "psrq", "psrq_joint")  # trained by k-means alone: only KMEANS_FIELDS count
# Fields that only some methods read; other methods leave them out of their checkpoint key, so adding them did not
# invalidate checkpoints trained before they existed.
METHOD_FIELDS = {"grouped": ("rqvae", "vqvae"), "grouped_data_dtype": ("rqvae", "vqvae"),
                 "grouped_matmul_dtype": ("rqvae", "vqvae"),
                 "sub_embedding_dim": ("fusid",), "fusion_hidden_dim": ("fusid",), "reg_weight": ("fusid",),
                 "variance_target": ("fusid",), "shared_levels": ("musicrec",), "align_weight": ("musicrec",),
                 "relation_weight": ("musicrec",), "align_temperature": ("musicrec",),
                 "align_modality": ("musicrec",), "playlists": ("fusid",), "train_playlists": ("fusid",)}


@dataclass
class TokenizerConfig:
    """Per-modality music tokenizer: RQ-VAE (3MToken), or the VQ-VAE / K-means baselines."""

    method: str = field(default="rqvae", metadata={
        "help": "rqvae (3MToken, Sec. 2), vqvae or kmeans (baselines, Sec. 3); rqkmeans, psrq (PSRQ paper, per "
                "modality), psrq_joint (PSRQ modal-joint), fusid (FusID), musicrec (MusicRec shared-specific RQ)",
        "choices": list(METHODS)})
    d_z: int = field(default=32, metadata={"help": "latent dim d_z of the RQ-VAE / VQ-VAE (Sec. 3, App. E.2)"})
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128], metadata={
        "help": "encoder hidden layers; the decoder mirrors them (App. B: 512 -> 256 -> 128 -> d_z)"})
    codebook_sizes: list[int] | None = field(default=None, metadata={
        "help": "codebook size per level; default (32, 64, 128) for rqvae (Sec. 3, App. B), 1024 for vqvae and "
                "the number of clusters for kmeans (Sec. 3 Baselines)"})
    beta: float = field(default=0.25, metadata={"help": "commitment weight beta (Sec. 2 loss, App. D: 0.25)"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (Sec. 3: 1e-4)"})
    weight_decay: float = field(default=0.01, metadata={
        "help": "AdamW weight decay (Sec. 3 names AdamW without a value; 0.01 is AdamW's usual default)"})
    batch_size: int = field(default=512, metadata={"help": "training batch size (Sec. 3: 512)"})
    epochs: int = field(default=150, metadata={"help": "training epochs per modality (Sec. 3: 150)"})
    test_fraction: float = field(default=0.2, metadata={
        "help": "share of tracks held out for testing, by track hash (Sec. 3: 80/20 split)"})
    seed: int = field(default=0, metadata={"help": "seed of the split, weights, shuffling and k-means"})
    kmeans_init_iters: int = field(default=20, metadata={
        "help": "Lloyd iterations of the k-means that initialises the codebooks on the first training batch "
                "(App. D, following its [21]; the paper gives no count)"})
    kmeans_init_rows: int = field(default=0, metadata={
        "help": "RQ-VAE/VQ-VAE: training rows of that k-means, taken from the first shuffle. 0: one batch, grown to "
                "the largest codebook (App. D; with 1,024 codes that is one row per codeword); N: N rows; -1: every "
                "training row"})
    standardize: bool = field(default=False, metadata={
        "help": "RQ-VAE/VQ-VAE: z-score each input feature with training statistics (decode maps back). Not in the "
                "paper; without it the 384-d MiniLM text embeddings collapse onto one level-1 code"})
    standardize_scale: str = field(default="feature", metadata={
        "help": "with standardize: feature (z-score each feature) or global (centre each feature, divide all by one "
                "scale, the root mean per-feature variance: the embedding's geometry is kept)"})
    dead_code_reset: bool = field(default=False, metadata={
        "help": "after each epoch, move codewords no training row used onto random residuals of the last batch "
                "(not in the paper, which relies on the k-means init alone)"})
    kmeans_full_batch_max_rows: int = field(default=65536, metadata={
        "help": "kmeans method: full-batch KMeans up to this many training rows, MiniBatchKMeans above"})
    sub_embedding_dim: int = field(default=128, metadata={
        "help": "fusid: dim d of each of the n sub-embeddings (FusID Sec. 2.2: 128; n = len(codebook_sizes))"})
    fusion_hidden_dim: int = field(default=2048, metadata={
        "help": "fusid: hidden width of the fusion network (FusID Sec. 3: 3072 -> 2048 -> n x 128)"})
    reg_weight: float = field(default=0.2, metadata={
        "help": "fusid: alpha, weight of the covariance + variance regularisation (FusID Sec. 2.1: 0.2)"})
    variance_target: float = field(default=1.0, metadata={
        "help": "fusid: gamma, target standard deviation of the variance loss (FusID Eq. 3: 1)"})
    shared_levels: int = field(default=2, metadata={
        "help": "musicrec: how many of the codebook levels are shared; the rest are modality-specific "
                "(MusicRec Fig. 4b: 1:1 of 4 levels)"})
    align_weight: float = field(default=1e-2, metadata={
        "help": "musicrec: alpha, weight of the InfoNCE collaborative alignment (MusicRec Eq. 12, Fig. 3: 1e-2); 0 "
                "turns it off"})
    relation_weight: float = field(default=1e-4, metadata={
        "help": "musicrec: beta, weight of the relation-preservation loss (MusicRec Eq. 12, Fig. 3: 1e-4); 0 turns "
                "it off"})
    align_temperature: float = field(default=0.1, metadata={
        "help": "musicrec: InfoNCE temperature tau (MusicRec Eq. 10; no value given in the paper)"})
    align_modality: str = field(default="TC", metadata={
        "help": "musicrec: the collaborative embedding to align with (TC track2vec; MusicRec uses SASRec "
                "embeddings); empty turns both collaborative losses off"})
    playlists: str | None = field(default=None, metadata={
        "help": "fusid: playlists JSONL whose co-occurrence trains the fusion network "
                "(default RUN_DIR/playlists.jsonl)"})
    train_playlists: str | None = field(default=None, metadata={
        "help": "fusid: id list of the playlists that may train (default RUN_DIR/splits/playlists_train.txt, "
                "required to exist); 'all' uses every playlist (only where no playlist is used for evaluation)"})
    device: str = field(default="auto", metadata={"help": "torch device: auto (cuda when available), cpu, cuda"})
    modalities: str = field(default="all", metadata={"help": "comma-separated modalities to tokenize, or 'all'"})
    disambiguate: bool = field(default=True, metadata={
        "help": "give tracks with identical codes an extra <ID-k> token, so every track ID is unique"})
    encode_chunk_rows: int = field(default=65536, metadata={
        "help": "rows per chunk when encoding the whole catalog into the token database (memory bound)"})
    grouped: bool = field(default=False, metadata={
        "help": "rqvae/vqvae: train the modalities together, batched by input width "
                "(tokenizer_ext/quantizers/rqvae_grouped.py: data on the device, per-model shuffles, CUDA graphs on a "
                "GPU); epochs count the largest modality"})
    grouped_data_dtype: str = field(default="float32", metadata={
        "help": "grouped: dtype of the training rows kept on the device (bfloat16 halves the memory of wide inputs)",
        "choices": ["float32", "bfloat16"]})
    grouped_matmul_dtype: str = field(default="auto", metadata={
        "help": "grouped: operand dtype of the matmuls (parameters, BatchNorm, codebook search and losses stay "
                "float32); auto: bfloat16 on CUDA (the faster setting on an H200, with the reconstruction of float32 "
                "on the Spotify embeddings: docs/performance.md), float32 elsewhere",
        "choices": ["auto", "float32", "bfloat16"]})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        self.hidden_dims = tuple(int(d) for d in self.hidden_dims)
        self.codebook_sizes = tuple(int(k) for k in (self.codebook_sizes or DEFAULT_CODEBOOK_SIZES[self.method]))
        if self.method in ("vqvae", "kmeans") and len(self.codebook_sizes) != 1:
            raise ValueError(f"{self.method} has one codebook level, got codebook_sizes={self.codebook_sizes}")
        if self.grouped and self.method not in ("rqvae", "vqvae"):
            raise ValueError(f"grouped training is for rqvae and vqvae, not {self.method}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")

    def model_settings(self) -> dict:
        """Everything that determines a trained quantizer of this method (the checkpoint-reuse key)."""
        names = [f.name for f in fields(TokenizerConfig) if f.name not in RUNTIME_FIELDS]
        names = [n for n in names if self.method in METHOD_FIELDS.get(n, (self.method,))]
        if self.method in KMEANS_METHODS:
            names = [n for n in names if n in KMEANS_FIELDS]
        else:
            names = [n for n in names if n != "kmeans_full_batch_max_rows"]
        if not self.grouped:  # per-modality training: the key of the checkpoints trained before the option existed
            names = [n for n in names if n not in ("grouped", "grouped_data_dtype", "grouped_matmul_dtype")]
        settings = {n: getattr(self, n) for n in names}
        if "grouped_matmul_dtype" in settings:  # keyed by the resolved dtype; float32 keeps the key of grouped
            dtype = self.matmul_dtype()          # checkpoints trained before the option existed
            if dtype == "float32":
                del settings["grouped_matmul_dtype"]
            else:
                settings["grouped_matmul_dtype"] = dtype
        return settings

    def matmul_dtype(self) -> str:
        """grouped_matmul_dtype with auto resolved for this config's device."""
        if self.grouped_matmul_dtype != "auto":
            return self.grouped_matmul_dtype
        from tokenizer_ext.quantizers.rqvae_model import resolve_device

        return "bfloat16" if resolve_device(self.device).type == "cuda" else "float32"

    def tokenizer_config(self) -> TokenizerConfig:
        """This config as a plain TokenizerConfig (drops fields a subclass adds, such as run_dir)."""
        return TokenizerConfig(**{f.name: getattr(self, f.name) for f in fields(TokenizerConfig)})
