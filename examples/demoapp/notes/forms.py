from django import forms
from django.core.files.uploadedfile import UploadedFile

from notes.models import Note, Upload

MAX_UPLOAD_SIZE = 10 * 1024 * 1024


class NoteForm(forms.ModelForm):
    class Meta:
        model = Note
        fields = ["title", "body"]


class UploadForm(forms.ModelForm):
    class Meta:
        model = Upload
        fields = ["file"]

    def clean_file(self) -> UploadedFile:
        file = self.cleaned_data["file"]
        if file.size > MAX_UPLOAD_SIZE:
            raise forms.ValidationError(
                f"The file is {file.size / 1024 / 1024:.1f} MB; the limit is "
                f"{MAX_UPLOAD_SIZE // 1024 // 1024} MB."
            )
        return file
