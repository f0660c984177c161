// placeholder: tests land in this file
