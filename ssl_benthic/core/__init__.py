"""What both stages stand on: errors, typed YAML configs, the CATAMI scheme, paths and hashes,
checkpoints, the one Trainer builder, seeding. Imports nothing else of the project.
"""
