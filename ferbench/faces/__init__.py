"""Finding faces: detectors (MTCNN with shipped weights, Haar, YuNet), crops framed like
FER2013's, and the defaults of both; used by data readers of whole photos and by infer/."""
