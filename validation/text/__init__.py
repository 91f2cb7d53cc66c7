"""Words: the terminal outputs, verdict.txt, the summary sentence, the model reading."""
