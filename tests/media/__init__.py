"""Tests of the media layer (media/): runner, probing, images, audio, tars."""
