"""Every config key, with a one-line comment. Experiment files override a few of them.

What each key may hold (ranges, choices, combinations) is checked by `validate.py` before a run starts.

Variant argument (after a colon): `--config configs/hnet_1stage.py:tiny` shrinks any
config for CI / quick CPU checks.
"""
from ml_collections import config_dict


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.seed = 0  # seeds parameter init, data order and per-step noise

  # --- data (hnet/data) ---
  c.data = config_dict.ConfigDict()
  c.data.dataset = "builtin"  # 'builtin' (embedded corpus), 'text' (own files, see text_paths) or a prepared TFDS name ('lm1b', 'pg19', ...)
  c.data.text_paths = ""  # for dataset='text': comma-separated files, globs or directories (.txt, .jsonl, optionally .gz/.xz)
  c.data.text_key = "text"  # field holding the text in .jsonl files and TFDS examples
  c.data.validation_fraction = 0.05  # dataset='text': share of documents held out for validation (by a hash of each document)
  c.data.txt_doc_bytes = 65536  # dataset='text': .txt files are cut at blank lines into documents of about this size (0 = one per file)
  c.data.data_dir = ""  # where prepared TFDS data lives; '' = $HNET_DATA_DIR or ~/.cache/hnet/tfds
  c.data.train_split = "train"  # split used for training
  c.data.eval_split = "validation"  # split used for validation bits/byte
  c.data.seq_len = 256  # bytes per packed training row (L)
  c.data.invalid_utf8 = "keep"  # 'keep' bytes of invalid UTF-8 as they are, or 'replace' them with U+FFFD
  c.data.packing_bins = 64  # rows grain's first-fit packer fills at once with documents' last pieces (more = less padding)
  c.data.shuffle_window_mb = 8.0  # train rows are shuffled in windows of this many MB, spreading a document's pieces over many batches (0 = off)
  c.data.worker_count = 0  # grain worker processes (0 = in-process)
  c.data.prefetch = 2  # batches prefetched by a background thread
  c.data.shards = 0  # train data shards (0 = one per process); fixed shards make batches independent of the process count

  # --- model (hnet/config.py: ModelConfig) ---
  c.model = config_dict.ConfigDict()
  c.model.layout = "['m1', ['T2'], 'm1']"  # H-Net arch layout: nested list of 'm'/'M'/'t'/'T'+count strings
  c.model.d_model = (128, 192)  # width per stage, outer -> inner
  c.model.d_ff = (0, 512)  # SwiGLU hidden width per stage (rounded up to a multiple of 128); 0 = no MLP layers used
  c.model.num_heads = (4, 4)  # attention heads per stage
  c.model.rotary_dim = (-1, -1)  # RoPE dims per head per stage; -1 = half the head dim
  c.model.window = (-1, -1)  # attention window per stage (keys before the query); -1 = global
  c.model.router = "cosine"  # 'cosine' (H-Net), 'delete_gate' (MrT5), 'whitespace', 'stride', 'entropy' (BLT), 'none' (flat)
  c.model.entropy_model = config_dict.placeholder(str)  # router='entropy': work dir of a byte LM trained with configs/entropy_lm.py
  c.model.entropy_threshold = 2.0  # router='entropy': θ in nats (python -m hnet.tools.calibrate_entropy measures it for target_ratio)
  c.model.entropy_rule = "global"  # router='entropy': 'global' H[t-1] > θ, or 'monotonic' H[t-1] - H[t-2] > θ (BLT)
  c.model.target_ratio = (4.0,)  # target compression N per outer stage (bytes per chunk)
  c.model.capacity_slack = 1.5  # chunk capacity = ceil(L / N * slack), rounded up to capacity_multiple
  c.model.capacity_multiple = 8  # tile that chunk capacities are rounded up to
  c.model.delete_gate_scale = -30.0  # MrT5 gate scale k: G in (k, 0)
  c.model.ssm_d_state = 32  # Mamba2 state size N
  c.model.ssm_expand = 2  # Mamba2 inner width = expand * d_model
  c.model.ssm_head_dim = 32  # Mamba2 head dim P
  c.model.ssm_d_conv = 4  # Mamba2 causal conv width
  c.model.ssm_chunk_size = 64  # SSD chunk length Q
  c.model.ssd_impl = "xla"  # SSD scan: 'xla' (chunked matmuls) or 'pallas' (TPU/GPU kernel; interpret mode on CPU)
  c.model.attention_impl = "auto"  # 'auto' (splash on TPU, cuDNN on GPU, XLA on CPU, chosen at lowering), 'splash', or jax.nn.dot_product_attention's 'default', 'cudnn', 'xla'
  c.model.softmax1 = False  # softmax₁ attention (exp(s) / (1 + Σ exp(s)): a query may attend to nothing), as MrT5's released model
  c.model.dtype = "float32"  # compute dtype ('bfloat16' on accelerators); params stay float32
  c.model.remat = "full"  # remat policy per layer: 'none', 'full', 'dots' (save matmul outputs)
  c.model.scan_layers = True  # run each group of identical layers as a jax.lax.scan; False unrolls it (same maths, loop-free program: XLA's cost model)
  c.model.init_std = 0.02  # std of linear layers; out projections get std / sqrt(n_res)

  # --- optimiser (hnet/train/optim.py) ---
  c.opt = config_dict.ConfigDict()
  c.opt.lr = 3e-3  # peak learning rate
  c.opt.schedule = "wsd"  # 'wsd' (warmup-stable-decay, H-Net) or 'cosine'
  c.opt.warmup_steps = 100  # linear warmup steps
  c.opt.decay_fraction = 0.2  # wsd: fraction of steps in the final linear decay
  c.opt.min_lr_ratio = 0.0  # final lr as a fraction of the peak
  c.opt.b1 = 0.9  # AdamW beta1
  c.opt.b2 = 0.95  # AdamW beta2
  c.opt.eps = 1e-8  # AdamW epsilon
  c.opt.weight_decay = 0.1  # decoupled weight decay, on the parameters `decay_rule` names
  c.opt.decay_rule = "default"  # 'default': not norms, biases, embeddings, width padding, SSM A/D/dt; 'hnet': the official code's (not biases, not norm modules)
  c.opt.grad_clip = 1.0  # global-norm clipping threshold
  c.opt.lr_multipliers = ()  # per-stage lr multipliers outer -> inner (len = stages); () = from lr_multiplier_rule
  c.opt.lr_multiplier_rule = "none"  # 'hnet': H-Net's sqrt(N_GPT * stage's share of positions * D_inner / D_s); 'none': all 1
  c.opt.lr_rule_bytes_per_token = 4.6  # N_GPT of the 'hnet' rule: bytes per token of the BPE baseline it transfers from
  c.opt.ratio_loss_weight = 0.03  # alpha of the H-Net ratio loss
  c.opt.router_lr_multiplier = 1.0  # times the stage's lr for the router's own parameters (MrT5's gate, H-Net's q/k)
  c.opt.delete_gate_kp = 0.5  # MrT5 PI controller proportional gain
  c.opt.delete_gate_ki = 1e-5  # MrT5 PI controller integral gain
  c.opt.delete_gate_two_sided = False  # True: the controller's weight may go negative (reward keeping); MrT5: >= 0

  # --- training loop (hnet/train/trainer.py) ---
  c.train = config_dict.ConfigDict()
  c.train.batch_size = 16  # global batch (rows of seq_len bytes)
  c.train.grad_accum_steps = 1  # micro-batches per optimiser step
  c.train.num_steps = 1000  # optimiser steps
  c.train.log_every = 25  # steps between metric writes
  c.train.eval_every = 250  # steps between validation runs
  c.train.eval_batches = 16  # validation batches per periodic eval (-1 = whole split)
  c.train.full_final_eval = True  # the evaluation at the last step covers the whole split (exact bits/byte)
  c.train.max_minutes = -1.0  # stop (with a checkpoint) after this wall time; -1 = no limit
  c.train.profile_steps = ()  # (start, count): an XProf trace of steps start..start+count-1 in <workdir>/profile; () = none
  c.train.profile_all_hosts = False  # trace on every process (False: process 0 only)

  # --- checkpoints (hnet/train/checkpoint.py) ---
  c.ckpt = config_dict.ConfigDict()
  c.ckpt.every = 250  # steps between checkpoints
  c.ckpt.keep = 3  # checkpoints kept
  c.ckpt.async_save = True  # save in the background

  # --- mesh (hnet/sharding.py) ---
  c.mesh = config_dict.ConfigDict()
  c.mesh.data = -1  # data-parallel axis size within a slice (-1 = the rest of the slice's devices)
  c.mesh.fsdp = 1  # fully sharded data-parallel axis size within a slice
  c.mesh.tensor = 1  # tensor-parallel axis size (within a slice)
  c.mesh.dcn_data = 1  # slices (TPU slices over DCN; elsewhere groups of consecutive devices), data parallel
  c.mesh.dcn_fsdp = 1  # slices the fsdp axis spans too (dcn_data * dcn_fsdp = the number of slices)

  # --- evaluation (eval.py) ---
  c.eval = config_dict.ConfigDict()
  c.eval.batch_size = 16  # rows per eval batch
  c.eval.bpb_batches = -1  # eval.py bpb: batches scored (-1 = the whole split: exact)
  c.eval.num_documents = 2048  # eval.py noise/mc: held-out documents read (the first N of the split; -1 = all)
  c.eval.num_items = 256  # eval.py noise/mc: (context, continuation) pairs / multiple-choice items
  c.eval.context_bytes = -1  # noise/mc: context bytes cut from a document (-1 = data.seq_len - 1 - continuation_bytes)
  c.eval.continuation_bytes = 64  # noise/mc: continuation bytes (the scored part)
  c.eval.mc_choices = 4  # mc: choices per item (the true continuation + continuations of other documents)
  c.eval.mc_targets = ("context",)  # mc: what perturbations noise: 'context', 'continuation', 'both'
  c.eval.perturbations = ("antspeak", "drop", "randomcase", "repeat", "uppercase", "typo", "nospace")  # noise/mc
  c.eval.seed = 0  # seeds item cuts and perturbations (item k is noised with seed + k)

  if arg:
    apply_variant(c, arg)
  return c


def paper_scale(c: config_dict.ConfigDict) -> None:
  """Settings shared by the H-Net paper configs: Mamba2 defaults, bf16, 8192-byte rows."""
  c.model.ssm_d_state = 128
  c.model.ssm_expand = 2
  c.model.ssm_head_dim = 64
  c.model.ssm_d_conv = 4
  c.model.ssm_chunk_size = 256
  c.model.dtype = "bfloat16"
  c.model.capacity_slack = 1.25
  c.model.capacity_multiple = 128
  c.data.seq_len = 8192
  c.train.batch_size = 32
  c.opt.lr = 1e-3
  c.opt.lr_multiplier_rule = "hnet"
  c.opt.decay_rule = "hnet"  # the official grouping at the paper's sizes


def apply_variant(c: config_dict.ConfigDict, arg: str) -> None:
  """Applies comma-separated variants: 'tiny' shrinks the model and run for CI."""
  for variant in filter(None, (a.strip() for a in arg.split(","))):
    if variant == "tiny":
      stages = len(c.model.d_model)
      c.model.d_model = tuple(32 + 16 * s for s in range(stages))
      c.model.d_ff = tuple(0 if f == 0 else 128 for f in c.model.d_ff)
      c.model.num_heads = tuple(2 for _ in range(stages))
      c.model.rotary_dim = tuple(-1 for _ in range(stages))
      c.model.capacity_multiple = 8
      c.model.dtype = "float32"
      c.model.ssm_d_state = 16
      c.model.ssm_head_dim = 16
      c.model.ssm_chunk_size = 16
      c.data.seq_len = 64
      c.train.batch_size = 4
      c.train.num_steps = 4
      c.train.log_every = 2
      c.train.eval_every = 4
      c.train.eval_batches = 2
      c.train.full_final_eval = False
      c.ckpt.every = 2
      c.eval.batch_size = 4
    else:
      raise ValueError(f"unknown config variant {variant!r} (known: 'tiny')")
