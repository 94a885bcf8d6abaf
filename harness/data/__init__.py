"""Where cases come from: task and suite files, the readers that turn files into cases, support sets."""
