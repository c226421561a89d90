"""The tabular HMC benchmark (C-HMCNN protocol): ARFF files and the `hmc` command."""
