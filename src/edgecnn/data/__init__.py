"""Datasets: ImageFolder scanning, cached decoding, stratified splits, tensor augmentation."""
from edgecnn.data.augment import Augmentation, augment_batch
from edgecnn.data.batches import Normalization, TensorSet, iterate_batches, prepare_batch
from edgecnn.data.datasets import SAMPLE_ROOT, decode_images, scan_image_folder, stratified_split
from edgecnn.data.prepare import PreparedData, prepare_data

__all__ = ["Augmentation", "augment_batch", "Normalization", "TensorSet", "iterate_batches", "prepare_batch",
           "SAMPLE_ROOT", "decode_images", "scan_image_folder", "stratified_split", "PreparedData", "prepare_data"]
