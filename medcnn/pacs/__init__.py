"""PACS path: DICOMweb in (QIDO-RS, WADO-RS), confirmed DICOM results out (STOW-RS, C-STORE).
"""
