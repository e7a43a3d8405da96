"""GAN evaluation metrics: FID / FD_DINOv2 / CLIP-FD, KID, precision & recall, Inception Score.

    metric_main        registry (`calc_metrics`: several metrics sharing one embedding, `calc_metric`,
                       `validate_metric` with the smallest counts, `report_metric`), names like fid50k_full
    metric_utils       feature extraction for real data (cached on disk) and generators, shared between the
                       metrics of one evaluation; multi-GPU gather
    detectors          feature networks behind one interface (`get_detector(name)`)
    inception          our Inception-v3 (2015 TF graph) + loading NVIDIA's / fid-helper's TorchScript weights
    frechet_distance, kernel_inception_distance, precision_recall, inception_score: the metrics' math
    summary            run-dir summaries of metric-*.jsonl: best-<result>.json pointers, metrics.png
"""
