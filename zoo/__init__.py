"""rl-baselines3-zoo style command line for amago-sb: ``python -m zoo.{train,enjoy,plot,benchmark,tune}``.

Hyperparameters live in ``zoo/hyperparams/{amago,ppo,recurrent_ppo}.yml``; the user guide is ``docs/zoo.md``.
"""
