"""What a trained model learned: per-character losses, neurons, pictures and the HTML report."""
