"""Word tables of the spoken-command interpreter (:mod:`evf_sam_ros.commands`).

Phrases are tuples of lower-case words; the interpreter matches them on word boundaries, longest first.
Everything here is plain data so that a deployment can extend a table (e.g. more compound nouns) in one place.
"""
from __future__ import annotations


def phrases(*texts: str) -> tuple[tuple[str, ...], ...]:
    """Phrase tuples from space-separated texts, longest first (so 'pick up' wins over 'pick')."""
    return tuple(sorted({tuple(t.split()) for t in texts}, key=len, reverse=True))


# Leading command verbs -> intent. Intents: 'pick' (grasp it), 'find' (locate/show/segment it), 'go_to' (drive
# there), 'point' (point at it), 'bring' (fetch it to the speaker); '' when no verb was said.
VERBS: dict[str, tuple[tuple[str, ...], ...]] = {
    'pick': phrases('pick up', 'pick', 'grab', 'grasp', 'take', 'take hold of', 'lift', 'lift up', 'get',
                    'hold', 'pick it up', 'collect'),
    'find': phrases('find', 'locate', 'look at', 'look for', 'search for', 'where is', "where's", 'wheres',
                    'where are', 'show me', 'show', 'segment', 'highlight', 'detect', 'select', 'track', 'spot',
                    'focus on', 'identify', 'mark', 'do you see', 'can you see', 'is there', 'look', 'see',
                    'find me'),
    'go_to': phrases('go to', 'move to', 'drive to', 'navigate to', 'head to', 'go over to', 'walk to', 'approach',
                     'come to', 'take me to', 'lead me to', 'bring me to', 'go towards', 'move towards', 'drive towards', 'go near', 'move over to'),
    'point': phrases('point at', 'point to', 'point towards', 'point out'),
    'bring': phrases('bring me', 'bring', 'fetch', 'fetch me', 'give me', 'hand me', 'pass me', 'get me',
                     'bring over'),
}

# Politeness, addressing and hedges said before the command.
LEADING_POLITENESS = phrases(
    'please', 'can you', 'could you', 'would you', 'will you', 'can u', 'could u', 'would you mind',
    'i want you to', "i'd like you to", 'i would like you to', 'i need you to', 'i want', 'i need', "i'd like",
    'i would like', 'go ahead and', 'try to', 'kindly', 'hey', 'hi', 'hello', 'robot', 'hey robot', 'ok robot',
    'okay robot', 'ok', 'okay', 'so', 'well', 'alright', 'all right', 'now', 'then', 'just', 'like', 'oh',
    'now please', 'you', 'for me', 'let', "let's", 'lets')

# Said at the end of a command and not part of the description.
TRAILING_CLOSERS = phrases(
    'please', 'thanks', 'thank you', 'thank you very much', 'thanks a lot', 'cheers', 'now', 'right now',
    'for me', 'okay', 'ok', "that's all", 'that is all', "that's it", 'that is it', 'quickly', 'asap',
    'if you can', 'if you could', 'will you', 'would you', 'can you', 'robot', 'then', 'up')

# Disfluencies removed anywhere.
FILLERS = frozenset({'um', 'umm', 'ummm', 'uh', 'uhh', 'uhm', 'er', 'erm', 'ehm', 'hmm', 'hm', 'mm', 'mmm',
                     'ah', 'eh', 'uh-huh', 'mhm'})
FILLER_PHRASES = phrases('you know', 'uh huh', 'i guess', 'kind of', 'sort of')

# A whole utterance made of these (after politeness/closers are removed) means "clear all targets".
CLEAR_PHRASES = phrases(
    'stop', 'stop it', 'stop that', 'stop everything', 'stop now', 'stop stop', 'stop segmenting',
    'stop tracking', 'stop looking', 'cancel', 'cancel that', 'cancel it', 'cancel everything', 'cancel all',
    'never mind', 'nevermind', 'never mind that', 'nothing', 'nothing at all', 'nothing else', 'forget it',
    'forget that', 'forget about it', 'forget everything', 'forget all that', 'clear', 'clear it', 'clear all',
    'clear everything', 'clear targets', 'clear the targets', 'clear that', 'reset', 'reset everything',
    "that's all", 'that is all', "that's it", 'that is it', 'halt', 'abort', 'enough', 'done', "i'm done",
    'we are done', "we're done", 'all done', 'no', 'nope', 'no no', 'none', 'none of them', 'quit',
    'scratch that', 'drop it', 'leave it', 'freeze', 'hold on', 'wait', 'not anymore', 'no thanks',
    'no thank you', 'stand down', 'stop all', 'cancel the command', 'ignore that', 'ignore it',
    # safety words said on their own: never a target
    'emergency stop', 'emergency', 'e stop', 'estop', 'e-stop', 'pause', 'pause it', "that's enough",
    'that is enough', 'shut down', 'cease', 'hold it',
    'stay', 'stay there', 'stop moving', 'stop right there', 'kill', 'turn off', 'switch off')
# Safety words: anywhere inside a would-be target ("the red cube and stop", "i said stop") they make the whole
# command a clear; a robot that stops when in doubt is safe, one that acts on "stop" is not. Exception: the
# word names a thing ("the stop sign", "the emergency stop button", "the bus stop").
SAFETY_WORDS = frozenset({'stop', 'halt', 'freeze', 'abort', 'emergency', 'estop', 'e-stop', 'cancel', 'pause'})
SAFETY_NAMED_NOUNS = frozenset({'sign', 'signs', 'button', 'buttons', 'light', 'lights', 'switch', 'key', 'bar',
                                'block', 'lever', 'cord', 'exit', 'kit', 'pedal'})
SAFETY_NAMED_AFTER = frozenset({'bus', 'tram'})   # "the bus stop"; only before the word 'stop' itself
# Speech-to-text often drops apostrophes; read these as the contraction ("thats enough" = "that's enough").
APOSTROPHE_LESS = {'thats': "that's", 'dont': "don't", 'doesnt': "doesn't", 'didnt': "didn't", 'cant': "can't",
                   'wont': "won't", 'im': "i'm", 'whats': "what's", 'wheres': "where's", 'isnt': "isn't",
                   'youre': "you're", 'ive': "i've", 'lets': "let's", 'theres': "there's"}
# Words that describe no object: a "target" made only of these ("can you", "please do", "i want") is ignored.
FUNCTION_WORDS = frozenset({
    'a', 'an', 'the', 'this', 'that', 'these', 'those', 'it', 'its', 'them', 'they', 'i', 'me', 'my', 'you',
    'your', 'we', 'us', 'our', 'he', 'she', 'him', 'her', 'do', 'does', 'did', 'done', 'doing', 'can', 'could',
    'would', 'will', 'shall', 'should', 'may', 'might', 'must', 'want', 'wants', 'need', 'needs', 'like', 'please',
    'also', 'and', 'or', 'but', 'so', 'then', 'now', 'just', 'too', 'to', 'of', 'is', 'are', 'be', 'been', 'am',
    'was', 'were', 'have', 'has', 'had', 'get', 'go', 'make', 'let', 'not', 'no', 'yes', 'ok', 'okay', 'there',
    'here', 'up', 'down', 'out', 'on', 'off', 'in', 'at', 'some', 'any', 'all', 'thing', 'things', 'something',
    'anything', 'everything', 'stuff', 'one', 'ones', 'again', 'more', 'thanks', 'thank', 'very', 'much', 'really',
    "don't", 'dont', 'never', "won't", "can't", 'cannot'})
# A no-object utterance with one of these ("don't!", "never") is a clear, not an ignore.
NEGATION_WORDS = frozenset({"don't", 'dont', 'not', 'never', 'no', "won't", "can't", 'cannot'})
# Verbs that, followed by an object ("forget the red cube"), still mean clear: removing one target is not
# supported, so the safe reading is to drop them all rather than to segment the object named.
CLEAR_VERBS = phrases('stop', 'cancel', 'forget', 'forget about', 'clear', 'drop', 'release', 'let go of',
                      'ignore', 'stop tracking', 'stop looking at', 'stop picking up', 'never mind', 'nevermind')
NEGATIONS = phrases("don't", 'do not', 'dont', 'not', 'never', 'no need to', "you don't need to",
                    "don't need to", 'do not need to')

# Said with nothing to act on: ignored, never sent to the model.
CHITCHAT = phrases(
    'yes', 'yeah', 'yep', 'yup', 'sure', 'okay', 'ok', 'alright', 'all right', 'thanks', 'thank you', 'hello',
    'hi', 'hey', 'good', 'great', 'good job', 'well done', 'nice', 'cool', 'perfect', 'right', 'hmm okay',
    'good morning', 'bye', 'goodbye', 'oops', 'sorry', 'what', 'huh', 'pardon', 'excuse me', 'test', 'testing',
    'hello robot', 'hi robot', 'hey robot', 'robot')
PRONOUNS = phrases('it', 'that', 'this', 'them', 'those', 'these', 'that one', 'this one', 'the one', 'there',
                   'here', 'one', 'something', 'anything', 'everything', 'all', 'all of them', 'both', 'it up',
                   'that thing', 'this thing', 'stuff', 'things')
QUESTION_WORDS = frozenset({'what', "what's", 'whats', 'how', "how's", 'why', 'who', "who's", 'when', 'which'})

# "also the bottle", "and the cup too", "add the ball": keep the current targets and add these.
ADD_LEADING = phrases('also', 'and', 'and also', 'add', 'plus', 'additionally', 'as well as', 'oh and',
                      'and then', 'in addition', 'add also', 'also add')
ADD_TRAILING = phrases('too', 'as well', 'also', 'also please', 'in addition')

# Self-corrections: what follows replaces what came before ("the red cube I mean the blue cube").
CORRECTIONS = phrases('i mean', 'sorry', 'no wait', 'wait', 'actually', 'or rather', 'rather', 'make that',
                      'scratch that', 'correction', 'no sorry', 'sorry i mean')

# Target separators; each side must also look like a noun phrase of its own (see commands docstring).
SEPARATORS = phrases(',', 'and', ', and', 'and then', ', then', 'then', 'and also', 'as well as', 'plus',
                     ', and also', 'and the other', 'along with')
DETERMINERS = frozenset({'the', 'a', 'an', 'this', 'that', 'these', 'those', 'my', 'your', 'our', 'his', 'her',
                         'its', 'their', 'another', 'some', 'any', 'each', 'every', 'both'})
COLOURS = frozenset({'red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'black', 'grey', 'gray',
                     'brown', 'pink', 'cyan', 'magenta', 'violet', 'golden', 'gold', 'silver', 'beige', 'teal',
                     'navy', 'dark', 'light', 'bright', 'pale'})
ADJECTIVES = COLOURS | frozenset({
    'big', 'large', 'small', 'little', 'tiny', 'huge', 'tall', 'short', 'long', 'wide', 'narrow', 'round',
    'square', 'flat', 'empty', 'full', 'open', 'closed', 'wooden', 'metal', 'metallic', 'plastic', 'glass',
    'paper', 'shiny', 'striped', 'spotted', 'old', 'new', 'clean', 'dirty', 'leftmost', 'rightmost', 'closest',
    'nearest', 'farthest', 'furthest', 'biggest', 'largest', 'smallest', 'tallest', 'first', 'second', 'third',
    'last', 'other', 'left', 'right', 'middle', 'front', 'back', 'top', 'bottom', 'upper', 'lower', 'hot', 'cold'})
# Words after which an object is still expected: "the cup between the plate | and the bowl".
RELATIONS = frozenset({'between', 'among', 'amongst', 'of', 'near', 'beside', 'besides', 'behind', 'by',
                       'on', 'in', 'at', 'under', 'underneath', 'beneath', 'below', 'above', 'over', 'with',
                       'without', 'from', 'to', 'towards', 'toward', 'inside', 'outside', 'into', 'onto',
                       'against', 'beyond', 'across', 'along', 'around', 'than', 'like', 'holding', 'containing',
                       'or', 'for', 'opposite', 'past', 'after', 'before', 'where', 'which', 'that'})
# Absolute positions that close their own phrase ("the ball on the left and the cube" still splits).
POSITION_NOUNS = frozenset({'left', 'right', 'front', 'back', 'middle', 'center', 'centre', 'top', 'bottom',
                            'side', 'end', 'corner', 'edge'})
POSITION_PREPOSITIONS = frozenset({'on', 'at', 'in', 'to'})
# "X and Y" pairs that name one thing (also kept when the right side gets an article).
COMPOUNDS = frozenset({('salt', 'pepper'), ('fish', 'chips'), ('bread', 'butter'), ('mac', 'cheese'),
                       ('macaroni', 'cheese'), ('cup', 'saucer'), ('nuts', 'bolts'), ('rock', 'roll'),
                       ('salt', 'vinegar'), ('sweet', 'sour'), ('peanut', 'butter'), ('oil', 'vinegar'),
                       ('arts', 'crafts'), ('pen', 'pencil'), ('dustpan', 'brush'), ('lock', 'key'),
                       ('pestle', 'mortar'), ('mortar', 'pestle'), ('bits', 'pieces'), ('black', 'decker'),
                       ('hide', 'seek'), ('milk', 'cookies'), ('cheese', 'crackers'), ('ham', 'cheese')})

# Object nouns after which a homophone fix is safe ("read cube" -> "red cube").
OBJECT_NOUNS = frozenset({'cube', 'box', 'block', 'cylinder', 'can', 'ball', 'sphere', 'ring', 'donut',
                          'pyramid', 'one', 'object', 'thing', 'cup', 'mug', 'bottle', 'bowl', 'plate'})
# Speech-to-text homophones: word -> (replacement, context). Context 'before_noun': only when the next word
# (or the one after an adjective) is an object noun; 'after_modifier': only after an article, colour or size.
HOMOPHONES: dict[str, tuple[str, str]] = {
    'read': ('red', 'before_noun'),
    'blew': ('blue', 'before_noun'),
    'wring': ('ring', 'after_modifier'),
    'queue': ('cube', 'after_modifier'),
    'bawl': ('ball', 'after_modifier'),
}
