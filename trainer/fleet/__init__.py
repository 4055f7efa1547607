"""The fleet side of the loop: ingest uploads, label round trips, finetune and publish."""
