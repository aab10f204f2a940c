"""Training the interaction model: synthetic micro-turn episodes, the trainer, the evaluation
suite. Imports the model; nothing in the runtime imports this.
"""
