"""Faces: detection (RetinaFace, Haar cascades, user ONNX detectors), the FACES carrier, and the crop,
mask and paste math that face nodes and the face detailer share (pure functions of tensors)."""
