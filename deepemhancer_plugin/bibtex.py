# -*- coding: utf-8 -*-
# ruff: noqa: E501
"""
@article{SanchezGarcia2021,
title = {DeepEMhancer: a deep learning solution for cryo-EM volume post-processing},
author = {Sanchez-Garcia, Ruben and Gomez-Blanco, Josue and Cuervo, Ana and Carazo, Jose Maria and Sorzano, Carlos Oscar S. and Vargas, Javier},
journal = {Communications Biology},
volume = {4},
pages = {874},
year = {2021},
doi = {http://doi.org/10.1038/s42003-021-02399-1}
}
"""
