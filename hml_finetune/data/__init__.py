"""Labelled data for stage 2: HMC ARFF files (tabular benchmarks) and shard labels."""
