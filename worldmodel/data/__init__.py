from worldmodel.data.episode import Episode, EpisodeWriter, list_episodes, load_episode

__all__ = ["Episode", "EpisodeWriter", "list_episodes", "load_episode"]
