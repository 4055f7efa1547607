"""Detector evaluation: decoding head maps into boxes, the Caltech protocol, plots."""
